"""The web process (`lorad web`): a page to watch jobs, compare epochs, pick and resume.

It reads what the CLI reads (the store, the outbox manifests, the work folders' logs) and acts
only through `lorad.actions`, so the daemon stays the only process that runs stages. Importing
this package loads nothing of the web stack: `lorad.web.app` does.
"""
