"""Instrument-file readers.

`spectra.readers.detect.read_bytes` detects the format from content and dispatches to
`rruff`, `columns`, `jcamp` or `spc`; import the module you need.
"""
