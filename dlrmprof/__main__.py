from dlrmprof.cli import main

main()
