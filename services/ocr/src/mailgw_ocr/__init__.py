"""OCR scorer: consumes mail.received, reads the text of image parts with tesseract, scores it with
the body rules shared with antispam, and publishes a verdict to mail.verdicts."""
