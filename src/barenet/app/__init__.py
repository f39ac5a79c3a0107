"""The application around the library: CLI, runs on disk, progress display, images."""
