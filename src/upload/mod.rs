//! upload (in progress)
