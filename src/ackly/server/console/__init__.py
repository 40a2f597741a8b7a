"""The web console of the admin listener (pages.py): server-rendered pages, no build step."""
