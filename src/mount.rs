//! Placeholder: the mount lifecycle.
