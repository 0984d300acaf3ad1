//! Placeholder: profiles (official-client compatible) and secrets.
