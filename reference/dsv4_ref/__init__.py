"""NumPy reference of the DeepSeek-V4-Flash kernels, written from ../shared/spec/dsv4-reference.md."""
