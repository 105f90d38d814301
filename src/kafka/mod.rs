//! kafka (in progress)
