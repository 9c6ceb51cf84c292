from imgcls.cli import entry

entry()
