from keyhelper.console import main

main()
