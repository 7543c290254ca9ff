"""Hostile: never finishes importing (a busy loop at import). Not a module to deploy."""
while True:
    pass
