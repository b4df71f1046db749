module mizzen.dev/bench/httpload

go 1.22
