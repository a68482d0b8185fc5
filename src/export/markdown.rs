//! Markdown bug report.
