"""A first start: where lorad looks and what it uses, `lorad init` and `lorad kohya install`."""
