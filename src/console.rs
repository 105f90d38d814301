//! console (in progress)
