//! Settlement tests (see below).
