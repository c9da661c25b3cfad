"""nginx: nginx's error/access logs tied to the resets, and its configuration."""
