"""The two-factor sign-in web front-end: a password, then an object shown to the edge device's camera."""
