from lorad.cli import main

main()
