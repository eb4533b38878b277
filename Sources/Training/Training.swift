// module Training
