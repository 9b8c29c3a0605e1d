from rtvm.cli import main

main()
