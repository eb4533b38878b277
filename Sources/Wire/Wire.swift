// module Wire
