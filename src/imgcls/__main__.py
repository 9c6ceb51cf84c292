from imgcls.cli.main import entry

entry()
