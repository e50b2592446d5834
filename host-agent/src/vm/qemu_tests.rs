//! Pinned argument vectors (written next).
