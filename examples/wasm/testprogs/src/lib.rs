//! Test programs for weft-sandbox; each binary in `src/bin` documents itself.
