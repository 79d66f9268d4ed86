from hpf.cli.app import main

main()
