from dflowgen.cli import main

main()
