//! Exporters: Perfetto (Chrome trace-event JSON), JUnit XML, the Markdown bug report, and the
//! native binary trace format.
