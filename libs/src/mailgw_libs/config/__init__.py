"""The gateway's one configuration model, stored as versioned documents in `mailgw.config`.

- `model.GatewayConfig`: the validated document (rule system in `rulesystem.RuleSystemConfig`).
- `document`: YAML in and out (safe loading, errors naming the YAML path), content hash.
- `versions`: records on the topic and the fold that decides the current version.
- `store.ConfigStore`: read the history, publish a version (the `mailgw config` CLI).
- `follower.ConfigFollower`: a service's live view (`ServiceRuntime.on_config`, `ServiceRuntime.config`).
"""
