from vitc.cli import main

main()
