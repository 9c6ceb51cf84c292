"""The ``imgcls`` command: parsing arguments and printing results, nothing else. Every command is a
thin client of the library.
"""
