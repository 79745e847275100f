module github.com/daxsnap/daxsnap

go 1.26.8

require (
	golang.org/x/sys v0.50.0 // indirect
	pgregory.net/rapid v1.3.0 // indirect
)
