"""notebook: pandas tables of a capture and plots of them."""
