//! progress (in progress)
