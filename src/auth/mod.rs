//! Placeholder: OAuth2, PAT and login; the TokenSource that refreshes.
