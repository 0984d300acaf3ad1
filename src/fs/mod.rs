//! Placeholder: the filesystem core (no fuser types).
