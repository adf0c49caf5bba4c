"""Delivery: consumes mail.actions, relays accepted mail by SMTP, quarantines or blocks the rest,
retries deferrals through the mail.retry.<delay>s topics and reports every attempt on mail.delivery."""
