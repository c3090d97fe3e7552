from keyhelper._entry import main

main()
