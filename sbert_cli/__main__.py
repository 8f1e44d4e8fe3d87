from sbert_cli.cli import main

main()
