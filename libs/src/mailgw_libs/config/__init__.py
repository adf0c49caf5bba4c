"""The gateway's one configuration model, stored as versioned documents in `mailgw.config`."""
