//! Placeholder: the only module that knows fuser.
