"""SMTP ingress: accepts mail for relay domains (or from trusted networks) and writes it to mail.received."""
