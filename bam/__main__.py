from bam.cli.main import main

main()
