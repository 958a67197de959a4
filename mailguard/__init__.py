"""mailguard: an outbound SMTP relay that stops My Number (個人番号) leaks."""

__version__ = "0.1.0"
