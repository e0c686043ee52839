from attnkit.__main__ import main

main()
