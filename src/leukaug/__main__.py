from leukaug.cli import main

main()
