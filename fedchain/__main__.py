from fedchain.cli import run

run()
