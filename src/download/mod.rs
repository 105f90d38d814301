//! download (in progress)
