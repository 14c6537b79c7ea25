"""Browser tests: drive JupyterLab in headless Chromium (marker ``browser``)."""
