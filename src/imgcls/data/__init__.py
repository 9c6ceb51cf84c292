"""From a user's files to labelled records and network input: finding images, decoding them to RGB,
the preprocessing and augmentation transforms, the seeded train/val/test splits, and decoding
ahead in a child process. Nothing here knows about networks.
"""
