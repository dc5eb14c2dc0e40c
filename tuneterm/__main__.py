from tuneterm.cli import run

run()
