//! Config files (DESIGN.md section 3). INTERFACE CONTRACT filled in by the config work.
