"""The wallboard: its consumer (the day's board), the web server and the static page."""
