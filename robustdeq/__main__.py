from robustdeq.cli import main

main()
