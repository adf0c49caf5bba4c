"""Rules service: joins scorer verdicts per message (Redis), applies the policy, publishes mail.actions."""
